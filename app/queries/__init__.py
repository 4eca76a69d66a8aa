"""The read side for pages and API: headline numbers, keyset pages, lineage of a key. No Flask here.

Every function takes a Connection first and returns plain dicts and lists, so an HTML page and a
JSON answer render the same data. Pages are keyset pages: fetch `limit + 1` rows past an opaque
cursor (the last row's sort key plus its primary key); never OFFSET, never a full count.

Every function that reads one dataset's data takes `dataset`: a Dataset, its name, or None for the
default dataset `events` (resolved with `registry.resolve`, which raises DatasetError("not_found")).
"""
from ..datasets.registry import DEFAULT
from ..pipeline.watermark import NAME as WATERMARK
from .dead_letters import (
    DEAD_LETTER_STATUSES,
    ERROR_CODES,
    READER_CODES,
    SEARCH_MAX,
    SEARCH_MIN,
    VERSION_CODES,
    dead_letter,
    dead_letter_count,
    dead_letter_counts,
    dead_letter_ids,
    dead_letter_tallies,
    dead_letters_page,
    error_codes,
    iter_dead_letters,
    next_open_dead_letter,
)
from .lineage import key_variants, lineage_of_key, similar_keys
from .overview import datasets_overview, latest_runs, overview
from .paging import (
    MAX_PAGE,
    PAGE,
    BadCursor,
    decode_cursor,
    encode_cursor,
    keyset_page,
    one_int,
    page_limit,
    prefix_range,
    storable,
)
from .runs import RUN_STATUSES, run_detail, run_lineage, run_status, runs_page, runs_per_day
from .target import (
    DENSE_PREFIX,
    TARGET_SORTS,
    UnknownField,
    iter_target,
    searchable_fields,
    target_columns,
    target_page,
    target_row,
    target_search,
    target_sorts,
)
from .watermarks import watermark_page

__all__ = [
    "DEAD_LETTER_STATUSES", "DEFAULT", "DENSE_PREFIX", "ERROR_CODES", "MAX_PAGE", "PAGE", "READER_CODES",
    "RUN_STATUSES", "SEARCH_MAX", "SEARCH_MIN", "TARGET_SORTS", "VERSION_CODES", "WATERMARK", "BadCursor", "UnknownField", "datasets_overview",
    "dead_letter", "dead_letter_count", "dead_letter_counts", "dead_letter_ids", "dead_letter_tallies",
    "dead_letters_page", "decode_cursor", "encode_cursor", "error_codes", "iter_dead_letters", "iter_target",
    "key_variants", "keyset_page", "latest_runs", "lineage_of_key", "next_open_dead_letter", "one_int", "overview",
    "page_limit", "prefix_range", "run_detail", "run_lineage", "run_status", "runs_page", "runs_per_day",
    "searchable_fields", "similar_keys", "storable",
    "target_columns", "target_page", "target_row", "target_search", "target_sorts", "watermark_page",
]
