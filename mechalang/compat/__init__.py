"""Readers for other tools' recipe formats, each building the same AST the language builds."""
