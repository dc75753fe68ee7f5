"""isle.bench"""
