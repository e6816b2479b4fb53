"""The operator console (mita.web) driven in Debian's Chromium: the harness (conftest.py, browser.py, seed.py) and the tests."""
