"""The generic Registry: register by decorator, create by name, and a bad name says what is allowed."""

from __future__ import annotations

import pytest

from automl.errors import AutomlError
from automl.registry import Registry


def test_register_create_and_names_in_order() -> None:
    shapes: Registry = Registry("shape")

    @shapes.register("square")
    def square(side: float) -> float:
        return side * side

    shapes.register("circle")(lambda radius: 3.0 * radius * radius)
    assert shapes.names() == ("square", "circle") and "square" in shapes and len(shapes) == 2
    assert "triangle" not in shapes and ["square"] not in shapes  # a YAML list is no name
    assert shapes.create("square", 3.0) == 9.0 and shapes.get("square") is square


def test_a_name_is_registered_once() -> None:
    shapes: Registry = Registry("shape")
    shapes.register("square")(len)
    with pytest.raises(ValueError, match="shape name 'square' is taken"):
        shapes.register("square")(len)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sqaure", "unknown shape 'sqaure'; did you mean square? allowed: square, circle"),
        ("hexagon", "unknown shape 'hexagon'; allowed: square, circle"),
        (None, "unknown shape None; allowed: square, circle"),
    ],
)
def test_an_unknown_name_names_the_kind_the_close_ones_and_all(name: object, expected: str) -> None:
    shapes: Registry = Registry("shape")
    shapes.register("square")(len)
    shapes.register("circle")(len)
    with pytest.raises(AutomlError) as error:
        shapes.create(name, [])  # type: ignore[arg-type]
    assert str(error.value) == expected
