"""isle.net"""
