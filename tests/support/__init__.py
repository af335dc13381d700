"""Locators for real test data kept outside the repository (import as ``tests.support``)."""
