"""Thin HTTP and timer triggers: each turns an azure.functions request into a call on `shared` and its
`Reply` into an HttpResponse. No logic lives here."""
