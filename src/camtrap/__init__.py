"""camtrap"""
