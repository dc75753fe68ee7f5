"""isle.cgroups"""
