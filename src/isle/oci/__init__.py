"""isle.oci"""
