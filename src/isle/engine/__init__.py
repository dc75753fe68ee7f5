"""isle.engine"""
