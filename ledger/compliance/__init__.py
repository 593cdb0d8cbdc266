"""Employer compliance: arrears and fines for uninsured workers and dependents (issue 10)."""
