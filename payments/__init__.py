"""Renewal payments: fee schedules, the renewal saga and gateway adapters (ARCHITECTURE.md §6).

This package may import ``ledger``; ``ledger`` never imports it. It is filled in by the renewal
issue; today it only reserves its place in the layout.
"""
