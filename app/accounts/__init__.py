"""Accounts (SPEC §11): roles, users and their passwords, API tokens, the first-administrator setup
link, and the audit log. Free of Flask: the web app, the API and the CLI all call these functions.
"""
