"""Errors of the storage side.

IngestError
├── UnknownQuantity        a quantity code that is not in the registry
├── SchemaError            migrations could not bring the database to the expected shape
└── StoreUnavailable       the database cannot be reached (after retries, where retried)
"""


class IngestError(Exception):
    """Base of the storage side's errors."""


class UnknownQuantity(IngestError):
    pass


class SchemaError(IngestError):
    pass


class StoreUnavailable(IngestError):
    pass
