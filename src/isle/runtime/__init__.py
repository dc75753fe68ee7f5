"""isle.runtime"""
