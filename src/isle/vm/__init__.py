"""isle.vm"""
