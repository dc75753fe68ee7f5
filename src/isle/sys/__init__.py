"""isle.sys"""
