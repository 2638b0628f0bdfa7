"""repository.source: what makes a script's source acceptable, and which function it runs."""

from __future__ import annotations

import pytest

from repository.errors import InvalidScript
from repository.source import entry_function


def test_single_function_is_the_entry_point_whatever_the_script_name():
    assert entry_function("MyLM_function", "def build_lm_str(dat):\n    return dat\n") == "build_lm_str"


def test_function_named_like_the_script_wins_over_helpers_before_it():
    src = "def helper(x):\n    return x\n\ndef score(x):\n    return helper(x)\n"
    assert entry_function("score", src) == "score"


def test_otherwise_the_first_function_defined_is_the_entry_point():
    src = "def main(x):\n    return helper(x)\n\ndef helper(x):\n    return x\n"
    assert entry_function("anything", src) == "main"


def test_imports_decorators_and_classes_around_the_function_are_fine():
    src = (
        "import functools\n\nclass Box:\n    def unwrap(self):\n        return 1\n\n"
        "@functools.lru_cache\ndef cached(n):\n    return n\n"
    )
    assert entry_function("s", src) == "cached"


def test_methods_and_nested_functions_do_not_count():
    with pytest.raises(InvalidScript, match="must define a function"):
        entry_function("s", "class A:\n    def f(self):\n        pass\n")
    with pytest.raises(InvalidScript, match="must define a function"):
        entry_function("s", "if True:\n    def f():\n        pass\n")


@pytest.mark.parametrize("source", ["", " ", "\n\n", "\t \n"])
def test_empty_source_is_invalid(source):
    with pytest.raises(InvalidScript, match="empty") as e:
        entry_function("s", source)
    assert e.value.name == "s"


@pytest.mark.parametrize("source", [None, 42, b"def f():\n    pass\n"])
def test_non_string_source_is_invalid(source):
    with pytest.raises(InvalidScript):
        entry_function("s", source)


def test_syntax_error_names_line_column_and_text():
    src = "def f(x):\n    return x\n\ndef g(x):\n    return x +\n"
    with pytest.raises(InvalidScript) as e:
        entry_function("bad", src)
    message = str(e.value)
    assert "SyntaxError" in message
    assert "line 5" in message
    assert "column" in message
    assert "return x +" in message
    assert e.value.name == "bad"


def test_indentation_error_is_a_syntax_error_with_a_line():
    with pytest.raises(InvalidScript, match="line 2"):
        entry_function("s", "def f():\nreturn 1\n")


def test_nul_bytes_are_invalid_not_a_crash():
    with pytest.raises(InvalidScript):
        entry_function("s", "def f():\n    return 1\x00\n")


def test_absurd_nesting_is_invalid_not_a_crash():
    src = "def f():\n    return " + "(" * 5000 + "1" + ")" * 5000 + "\n"
    with pytest.raises(InvalidScript):
        entry_function("s", src)


def test_source_without_a_function_is_invalid():
    with pytest.raises(InvalidScript, match="must define a function"):
        entry_function("s", "x = 1\n")
