"""The suite's one conftest: the hook of tests/needs.py (a test whose tool or service
is missing is skipped, or with CI=true fails)."""

from needs import pytest_configure, pytest_runtest_setup  # noqa: F401 - pytest hooks
