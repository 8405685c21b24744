"""Table Storage clients: one TableClient per table per worker, created on first use."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    DeserializationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableServiceClient
from azure.data.tables._policies import TablesRetryPolicy  # not exported; _TableService says why it is needed

from .errors import DependencyUnavailable
from .refreshing import Refreshing
from .transport import RetryBudget, azure_client_options, azure_transport

ACCOUNTS_TABLE = "PortalAccounts"
FLOWS_TABLE = "SsoFlows"
EVENTS_TABLE = "SignInEvents"
SCIM_USERS_TABLE = "ScimUsers"  # directory sync (shared/scim/store.py)
# Its partition of person rows (store.py; read by shared/accounts.py's `enable` without the SCIM code),
# its pointers from an account email key to the person holding it, and its record of the email keys of
# people Entra deleted (both read by the accounts CLI before it makes an account by hand).
SCIM_PERSON_PARTITION, SCIM_EMAIL_PARTITION, SCIM_REMOVED_PARTITION = "P", "E", "R"
DIRECTORY_EVENTS_TABLE = "DirectoryEvents"  # directory sync's audit (shared/scim/events.py)
APP_TABLES = (ACCOUNTS_TABLE, FLOWS_TABLE, EVENTS_TABLE, SCIM_USERS_TABLE, DIRECTORY_EVENTS_TABLE)
LOGIN_TABLES = (ACCOUNTS_TABLE, FLOWS_TABLE, EVENTS_TABLE)  # what every login reads and writes
_PING_KEY = "portal-sso-ping"  # no row has it: the answer is a 404 that says the table is there



@contextlib.contextmanager
def storage_errors(dependency: str = "table_storage") -> Iterator[None]:
    """Turns the SDK's transport, auth and server errors into DependencyUnavailable (503), and an
    answer it cannot read as table data (DeserializationError: a ValueError, not an HttpResponseError;
    a gateway's 200 HTML page where rows should be). Errors a caller expects (not found, precondition
    failed) must be caught inside the block."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError, ClientAuthenticationError, DeserializationError) as exc:
        raise DependencyUnavailable(dependency, type(exc).__name__) from exc
    except HttpResponseError as exc:
        raise DependencyUnavailable(dependency, f"HTTP {exc.status_code}: {type(exc).__name__}") from exc
    except (TypeError, AttributeError, KeyError) as exc:
        # The SDK reading a 200 of JSON that is no table data ({"status": "ok"}, null) fails so, inside
        # its own code; the same error raised by ours is a bug, and goes on as one.
        if not _raised_in_the_sdk(exc):
            raise
        raise DependencyUnavailable(dependency, "DeserializationError") from exc


def _raised_in_the_sdk(exc: BaseException) -> bool:
    """Whether the innermost frame of `exc` is the Azure SDK's (azure.core or azure.data.tables)."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and str(frame.tb_frame.f_globals.get("__name__", "")).startswith("azure.")


def table_row(entity):
    """A point read's entity, when it is a table row: a 200 of JSON that is no table data comes back from
    the SDK as an "entity" without its keys, which would be read as a row (a KeyError, a 500)."""
    if "PartitionKey" not in entity or "RowKey" not in entity:
        raise DependencyUnavailable("table_storage", "DeserializationError")
    return entity


class BudgetedTablesRetryPolicy(RetryBudget, TablesRetryPolicy):
    """The Tables SDK's retry policy (its secondary-location handling kept), within its budget."""


class _TableService(TableServiceClient):
    """A TableServiceClient whose retry policy, and its table clients' (get_table_client reuses the
    list), is BudgetedTablesRetryPolicy. The SDK offers no option that chooses its retry policy: this
    overrides its private `_configure_policies` (azure-data-tables 12.7), pinned by
    tests/reliability/test_retry_after.py, which fails if the method is renamed."""

    def _configure_policies(self, **kwargs):
        return [BudgetedTablesRetryPolicy(**kwargs) if type(policy) is TablesRetryPolicy else policy
                for policy in super()._configure_policies(**kwargs)]


def table_service(connection_string: str | None = None, endpoint: str | None = None, credential=None,
                  **options) -> TableServiceClient:
    """The service client of a connection string, else of the endpoint with the credential."""
    if connection_string:
        return _TableService.from_connection_string(connection_string, **options)
    return _TableService(endpoint=endpoint, credential=credential, **options)


class Tables:
    """Hands out the TableClient of each table. With `create` (a connection string: Azurite, or an
    account key), the app's tables are made sure of once before the first, in one round trip. Without
    it (TABLES_ENDPOINT and the app's identity) scripts/deploy made them, and the identity's roles are
    on each table alone (README): listing or creating tables is an operation on the account, which it
    may not do, so nothing but the tables' own rows is asked for."""

    def __init__(self, service: TableServiceClient, *, create: bool = True):
        self._service = service
        self._clients: dict[str, TableClient] = {}
        self._lock = threading.Lock()  # guards _clients; never held during I/O
        # Single-flight (refreshing.py's rules): first uses arriving while the tables are made sure of
        # wait for that one attempt and share its outcome, so against silent storage each gets its 503
        # within one read timeout (under the lock, four took 6, 12, 18, 24 s). Kept once it succeeded; a
        # failure is not kept, the next first use tries again.
        self._ensured = (Refreshing(self._ensure_tables, "tables", "made sure of", fresh_for=math.inf,
                                    retry_seconds=math.inf) if create else None)

    @classmethod
    def from_settings(cls, connection_string: str | None, endpoint: str | None,
                      credential_factory: Callable[[], object], **options) -> Tables:
        """A connection string, else the endpoint with the credential; `options` add to (or override)
        the app's usual client options."""
        options = {**azure_client_options(), "transport": azure_transport(), **options}
        if connection_string:
            return cls(table_service(connection_string, **options))
        return cls(table_service(endpoint=endpoint, credential=credential_factory(), **options), create=False)

    def client(self, name: str) -> TableClient:
        found = self._clients.get(name)
        if found is not None:
            return found
        if self._ensured is not None:
            self._ensured.get()
        with self._lock:
            return self._clients.setdefault(name, self._service.get_table_client(name))

    def _ensure_tables(self) -> bool:
        """Creates whichever of the app's tables does not exist."""
        names = " or ".join(f"TableName eq '{name}'" for name in APP_TABLES)
        with storage_errors():
            existing = {table.name for table in self._service.query_tables(names)}
            for name in APP_TABLES:
                if name not in existing:
                    with contextlib.suppress(ResourceExistsError):  # another worker made it meanwhile
                        self._service.create_table(name)
        return True

    def ping(self, *tables: str) -> None:
        """Two cheap round trips to each of `tables` (default PortalAccounts): a read and a delete of a
        row that is not there, so a credential that may read but not write (a 'Reader' role where the
        login's flow marker and audit row need 'Contributor') is refused here as at every login; not the
        account's list of tables, which an identity with roles on the tables alone may not read. Raises
        DependencyUnavailable naming the table when storage does not answer or refuses, or the table
        does not exist."""
        for table in tables or (ACCOUNTS_TABLE,):
            try:
                missing = self._ping_one(self.client(table))
            except DependencyUnavailable as err:
                said = err.detail.removeprefix(f"{err.dependency}: ")
                # from the SDK's own error, as before: callers read it (tools.accounts: a 403)
                raise DependencyUnavailable("table_storage", f"table {table}: {said}") from err.__cause__ or err
            if missing is not None:  # its TableNotFound the cause, which tools.accounts reads
                raise DependencyUnavailable("table_storage", f"table {table} does not exist (scripts/deploy "
                                            "makes it)") from missing

    @staticmethod
    def _ping_one(client: TableClient) -> ResourceNotFoundError | None:
        """The read and the delete of the ping key; the TableNotFound error when the table is not there
        (the read says so first: the delete would take that 404 for success)."""
        with storage_errors():
            try:
                client.get_entity(_PING_KEY, _PING_KEY)
            except ResourceNotFoundError as exc:
                if exc.error_code == "TableNotFound":
                    return exc
            else:  # no row has the ping key: an answer with one is not Table Storage's (a gateway's JSON)
                raise DependencyUnavailable("table_storage", "DeserializationError")
            client.delete_entity(_PING_KEY, _PING_KEY)  # a write that changes nothing, refused to a reader
        return None


def delete_existed(table: TableClient, partition_key: str, row_key: str, etag: str | None = None) -> bool:
    """Deletes one row with one DELETE, unconditional or, given `etag`, only while the row is as read
    (ResourceModifiedError otherwise); True when the row was there. delete_entity reports a 404 as
    success, so the status is read from the response itself (its last attempt's)."""
    statuses: list[int] = []
    condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    changed = None
    with storage_errors():
        try:
            table.delete_entity(partition_key, row_key, **condition,
                                raw_response_hook=lambda r: statuses.append(r.http_response.status_code))
        except ResourceModifiedError as exc:  # the caller's to decide, not storage unavailable
            changed = exc
    if changed is not None:
        raise changed
    return bool(statuses) and statuses[-1] != 404


def delete_matching(table: TableClient, query: str, parameters: dict) -> int:
    """Deletes every row the query matches (housekeeping). Returns how many deletes were sent;
    delete_entity treats a row already gone as success, which is what a purge wants."""
    count = 0
    with storage_errors():
        for row in table.query_entities(query, parameters=parameters, select=["PartitionKey", "RowKey"]):
            table.delete_entity(row["PartitionKey"], row["RowKey"])
            count += 1
    return count
