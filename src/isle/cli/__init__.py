"""isle.cli"""
