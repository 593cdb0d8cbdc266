"""Funded cohorts (issue 11, Sudan): a funder such as the Zakat chamber enrols beneficiaries with
a fund in bulk, pays their contributions by month, and ends the cohort (docs/funds.md).

* :mod:`ledger.funds.states`: the 18 Sudanese states (ISO 3166-2:SD), as data;
* :mod:`ledger.funds.rules`: the pure rules (who is covered on a day, what a contribution must
  be) over plain values;
* :mod:`ledger.funds.totals`: the pure per-funder, per-state, per-month totals;
* :mod:`ledger.funds.projection`: the projections (tables) the appender keeps, and the reads the
  coverage reader and the FundService make.
"""
