"""isle.api"""
