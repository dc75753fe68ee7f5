"""isle.image"""
