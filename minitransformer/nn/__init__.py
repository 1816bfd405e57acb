"""Layers: Module, Parameter and the transformer building blocks."""

from .module import Module, ModuleList, Parameter, Sequential, StateDictError

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "StateDictError"]
