"""``get_params`` / ``set_params`` / ``repr`` shared by the estimators whose constructor arguments are
listed in ``param_names`` (scikit-learn's convention: the constructor only stores its arguments)."""
from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["EstimatorParams"]


class EstimatorParams:
    param_names: ClassVar[tuple[str, ...]] = ()

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters by name (scikit-learn's contract; ``deep`` is accepted for
        ``sklearn.base.clone`` and friends: no parameter is itself an estimator here)."""
        return {name: getattr(self, name) for name in self.param_names}

    def set_params(self, **params: Any) -> Any:
        for name, value in params.items():
            if name not in self.param_names:
                raise ValueError(f"unknown parameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"
