"""The logic of Portal SSO. Nothing in this package imports azure.functions: `functions/` is the glue."""
