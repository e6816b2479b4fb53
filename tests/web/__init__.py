"""The operator console (mita.web) in Debian's Chromium: the harness (conftest, browser, harness, seed), the tests."""
