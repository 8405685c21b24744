"""The Azure Functions (v2 programming model) entry point: registers the blueprints and prepares the
worker, nothing else. Settings are read on first use, never here: an exception at import shows in
Azure only as "no functions found"."""

import azure.functions as func

from functions.maintenance import bp as maintenance
from functions.ops import bp as ops
from functions.scim import bp as scim
from functions.sso import bp as sso
from shared.worker import ready

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(sso)
app.register_functions(ops)
app.register_functions(maintenance)
app.register_functions(scim)
ready()  # the worker's one-time preparation (shared/worker.py); never raises
