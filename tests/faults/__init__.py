import pytest

# The exact-state checks live in helper modules: let pytest explain their failing asserts too.
pytest.register_assert_rewrite("tests.faults.load", "tests.faults.services")
