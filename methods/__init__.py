"""Generation methods (SVD, AnimateLCM, one-step models, dummy) behind one small interface.

Cheap to import (no torch): the registry, spec parsing and the method base/exception live here;
adapters are imported by ``get_method`` only.
"""
from .base import Method, NonFiniteOutput
from .registry import (METHODS, MethodInfo, MethodSpec, get_method, list_methods, parse_method_options,
                       parse_spec, parse_specs)

__all__ = ["METHODS", "Method", "MethodInfo", "MethodSpec", "NonFiniteOutput", "get_method", "list_methods",
           "parse_method_options", "parse_spec", "parse_specs"]
