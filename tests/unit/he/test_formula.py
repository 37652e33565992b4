"""The formula language: grammar, canonical form, every error class, and fuzzing."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import ComputeError, SpecError
from compute.he import FormulaError, HELimits, Scheme, parse_formula
from compute.he.nodes import BinOp, Call, Col, Expr, Neg, Num, WeightList, render
from compute.he.typecheck import Kind, check_formula

COLS = ("age", "income", "x", "y")


# -- valid formulas ------------------------------------------------------------------------
def test_precedence_and_associativity() -> None:
    e = parse_formula("2.5*age + 0.3*income - 7")
    assert e == BinOp(
        "-",
        BinOp(
            "+", BinOp("*", Num(Fraction(5, 2)), Col("age")), BinOp("*", Num(Fraction(3, 10)), Col("income"))
        ),
        Num(Fraction(7)),
    )
    assert parse_formula("a - b - c") == BinOp("-", BinOp("-", Col("a"), Col("b")), Col("c"))
    assert parse_formula("a / 2 * 3") == BinOp("*", BinOp("/", Col("a"), Num(Fraction(2))), Num(Fraction(3)))
    assert parse_formula("-a * -2") == BinOp("*", Neg(Col("a")), Neg(Num(Fraction(2))))
    assert parse_formula("+a") == Col("a")


def test_numbers_are_exact_decimals() -> None:
    assert parse_formula("0.1") == Num(Fraction(1, 10))
    assert parse_formula("1.5e3") == Num(Fraction(1500))
    assert parse_formula("25E-2") == Num(Fraction(1, 4))


def test_calls_and_weight_lists() -> None:
    e = parse_formula("dot(x, [1, -2.5, +3e1])")
    assert e == Call("dot", (Col("x"), WeightList((Fraction(1), Fraction(-5, 2), Fraction(30)))))
    assert parse_formula("sum(x*y)") == Call("sum", (BinOp("*", Col("x"), Col("y")),))
    assert parse_formula("count(age)") == Call("count", (Col("age"),))
    assert parse_formula(" mean ( income ) ") == Call("mean", (Col("income"),))


@pytest.mark.parametrize(
    "text",
    [
        "sum(income)",
        "2.5*age + 0.3*income - 7",
        "dot(x, [1, -2.5, 300])",
        "-(x - -y) / 4",
        "sum(x*y) / count(x)",
        "mean(a + b) - 0.001",
    ],
)
def test_canonical_rendering_round_trips(text: str) -> None:
    e = parse_formula(text)
    canonical = render(e)
    assert " " not in canonical
    assert parse_formula(canonical) == e
    assert render(parse_formula(canonical)) == canonical


def test_equal_formulas_render_equal() -> None:
    assert render(parse_formula("2*x+1")) == render(parse_formula("((2 * x)) + 1.0"))


# -- syntax errors, with positions ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "pos", "fragment"),
    [
        ("sum(", 4, "expected a number"),
        ("2 +", 3, "expected a number"),
        ("x $ 2", 2, "unexpected character '$'"),
        ("1.", 2, "digits after the decimal point"),
        ("1e+", 3, "digits in the exponent"),
        ("3x", 1, "after a number"),
        ("(x + 1", 6, "expected ')'"),
        ("x y", 2, "unexpected 'y'"),
        ("", 0, "empty formula"),
        ("   ", 3, "empty formula"),
        ("x + é", 4, "unexpected character"),
        ("sum(x,)", 6, "expected a number"),
        ("dot(x, [1 2])", 10, "',' or ']'"),
        ("dot(x, [1, y])", 11, "expected a number"),
    ],
)
def test_syntax_errors_carry_positions(text: str, pos: int, fragment: str) -> None:
    with pytest.raises(FormulaError) as err:
        parse_formula(text)
    assert err.value.pos == pos
    assert fragment in str(err.value)
    assert f"position {pos}" in str(err.value)
    assert isinstance(err.value, SpecError) and isinstance(err.value, ValueError)


def test_unknown_function() -> None:
    with pytest.raises(FormulaError, match="unknown function 'median'") as err:
        parse_formula("1 + median(x)")
    assert err.value.pos == 4


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("sum(x, y)", "sum() takes 1 argument, got 2"),
        ("mean()", "mean() takes 1 argument, got 0"),
        ("count(x, x)", "count() takes 1 argument, got 2"),
        ("dot(x)", "dot() takes 2 arguments, got 1"),
        ("dot(x, [1], y)", "dot() takes 2 arguments, got 3"),
    ],
)
def test_wrong_arity(text: str, fragment: str) -> None:
    with pytest.raises(FormulaError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_formula(text)


@pytest.mark.parametrize("text", ["[1, 2]", "sum([1])", "x + [1]", "dot([1], x)"])
def test_weight_list_only_as_dot_second_argument(text: str) -> None:
    with pytest.raises(FormulaError, match="weight list"):
        parse_formula(text)


def test_dot_needs_a_weight_list() -> None:
    with pytest.raises(FormulaError, match="weight list"):
        parse_formula("dot(x, y)")
    with pytest.raises(FormulaError, match="empty weight list"):
        parse_formula("dot(x, [])")


# -- limits ----------------------------------------------------------------------------------
def test_formula_too_long() -> None:
    limits = HELimits(max_formula_chars=20)
    parse_formula("x" * 20, limits)
    with pytest.raises(FormulaError, match="longer than 20"):
        parse_formula("x" * 21, limits)


def test_formula_too_deep() -> None:
    limits = HELimits(max_depth=8)
    parse_formula("(" * 7 + "x" + ")" * 7, limits)
    with pytest.raises(FormulaError, match="deeper than 8"):
        parse_formula("(" * 9 + "x" + ")" * 9, limits)
    with pytest.raises(FormulaError, match="deeper than 8"):
        parse_formula("-" * 9 + "x", limits)
    with pytest.raises(FormulaError, match="deeper than 8"):  # a long flat chain is a deep tree
        parse_formula("+".join(["x"] * 9), limits)


def test_default_depth_survives_hostile_nesting() -> None:
    with pytest.raises(FormulaError, match="deeper than"):
        parse_formula("(" * 100_000 + "x" + ")" * 100_000, HELimits(max_formula_chars=300_000))
    with pytest.raises(SpecError):
        HELimits(max_depth=10_000)


def test_too_many_nodes_and_weights() -> None:
    with pytest.raises(FormulaError, match="more than 5 nodes"):
        parse_formula("sum(x) + sum(y) + 1", HELimits(max_nodes=5))
    with pytest.raises(FormulaError, match="more than 3 weights"):
        parse_formula("dot(x, [1, 2, 3, 4])", HELimits(max_weights=3))


def test_number_limits() -> None:
    with pytest.raises(FormulaError, match="number longer"):
        parse_formula("1" * 41)
    with pytest.raises(FormulaError, match="exponent"):
        parse_formula("1e31")
    with pytest.raises(FormulaError, match="name longer"):
        parse_formula("a" * 65)


def test_formula_must_be_text() -> None:
    with pytest.raises(FormulaError):
        parse_formula(b"sum(x)")  # type: ignore[arg-type]


# -- static checks (columns, kinds, schemes) ------------------------------------------------
def test_unknown_column_has_a_position() -> None:
    with pytest.raises(FormulaError, match="unknown column 'salary'") as err:
        check_formula(parse_formula("sum(age) + sum(salary)"), COLS, Scheme.OU)
    assert err.value.pos == 15


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x + sum(x)", "cannot combine an encrypted column with an encrypted aggregate"),
        ("x / y", "division is only by plaintext constants"),
        ("x / (2 - 2)", "division by zero"),
        ("sum(sum(x))", "sum() expects an encrypted column"),
        ("mean(3)", "mean() expects an encrypted column"),
        ("count(sum(x))", "count() expects an encrypted column"),
    ],
)
def test_kind_errors(text: str, fragment: str) -> None:
    with pytest.raises(FormulaError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_formula(parse_formula(text), COLS, Scheme.CKKS)


@pytest.mark.parametrize("scheme", [Scheme.OU, Scheme.ZPAILLIER])
@pytest.mark.parametrize("text", ["sum(x*y)", "x*y", "sum(x)*sum(y)"])
def test_paillier_cannot_multiply_ciphertexts(scheme: Scheme, text: str) -> None:
    with pytest.raises(ComputeError, match="cannot multiply two ciphertexts"):
        check_formula(parse_formula(text), COLS, scheme)


def test_ckks_multiplies_up_to_depth_two() -> None:
    assert check_formula(parse_formula("sum(x*y)"), COLS, Scheme.CKKS).ckks_depth == 1
    assert check_formula(parse_formula("x*y*x"), COLS, Scheme.CKKS).ckks_depth == 2
    assert check_formula(parse_formula("2.5*x + 0.3*y - 7"), COLS, Scheme.CKKS).ckks_depth == 1
    assert check_formula(parse_formula("sum(3*x)/7 + 1"), COLS, Scheme.CKKS).ckks_depth == 0
    with pytest.raises(ComputeError, match="multiplicative depth 3"):
        check_formula(parse_formula("x*y*x*y"), COLS, Scheme.CKKS)


def test_kinds() -> None:
    def kind(text: str) -> Kind:
        return check_formula(parse_formula(text), COLS, Scheme.CKKS).kind

    assert kind("count(x) * 2") is Kind.CONST
    assert kind("x - 1") is Kind.COLUMN
    assert kind("dot(x, [1]) + sum(y)") is Kind.SCALAR


# -- fuzzing -------------------------------------------------------------------------------
ALPHABET = "xy01.5e+-*/()[], sumeandotcount\t"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=60))
def test_arbitrary_text_only_raises_spec_errors(text: str) -> None:
    try:
        parse_formula(text)
    except SpecError:
        pass


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_near_miss_text_parses_or_raises_spec_error(text: str) -> None:
    try:
        e = parse_formula(text)
    except SpecError:
        return
    assert parse_formula(render(e)) == e
    try:
        check_formula(e, ("x", "y"), Scheme.CKKS)
    except (SpecError, ComputeError):
        pass


def _exprs() -> st.SearchStrategy[Expr]:
    decimals = st.fractions(min_value=0, max_value=1000, max_denominator=1).map(Fraction) | st.sampled_from(
        [Fraction(1, 10), Fraction(5, 2), Fraction(1, 1000)]
    )
    leaves = st.one_of(decimals.map(Num), st.sampled_from(["x", "y", "age"]).map(Col))

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        ops = st.sampled_from(["+", "-", "*", "/"])
        return st.one_of(
            children.map(Neg),
            st.builds(BinOp, ops, children, children),
            st.builds(lambda f, c: Call(f, (c,)), st.sampled_from(["sum", "mean", "count"]), children),
        )

    return st.recursive(leaves, extend, max_leaves=12)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_exprs())
def test_render_then_parse_is_identity(e: Expr) -> None:
    assert parse_formula(render(e)) == e
