"""OpenAPI links between operations: where an answer's ids lead (schemathesis follows them statefully)."""


def _links(param: str, source: str, *operations: str, dataset: str | None = None) -> dict:
    """Links to `operations`, passing `param` from `source` (and the object's dataset as `?dataset=`)."""
    parameters = {param: source, **({"query.dataset": dataset} if dataset else {})}
    return {op: {"operationId": op, "parameters": parameters} for op in operations}


RUN_LINKS = _links("run_id", "$response.body#/id", "get_run", "cancel_run", "retry_run", "backfill_run")
RUN_PAGE_LINKS = _links("run_id", "$response.body#/items/0/id", "get_run", "cancel_run", "retry_run",
                        "backfill_run")
TARGET_LINKS = _links("key", "$response.body#/items/0/key", "lineage")
DEAD_LETTER_ACTIONS = ("get_dead_letter", "discard_dead_letter", "reopen_dead_letter", "reprocess_dead_letter")
DEAD_LETTER_PAGE_LINKS = _links("dl_id", "$response.body#/items/0/id", *DEAD_LETTER_ACTIONS,
                                dataset="$response.body#/items/0/dataset")
DEAD_LETTER_LINKS = _links("dl_id", "$response.body#/id", *DEAD_LETTER_ACTIONS, dataset="$response.body#/dataset")
REPROCESS_LINKS = _links("dl_id", "$response.body#/dead_letter/id", *DEAD_LETTER_ACTIONS,
                         dataset="$response.body#/dead_letter/dataset")
WATERMARK_LINKS = _links("name", "$response.body#/name", "get_watermark", "set_watermark", "reset_watermark",
                         "preview_watermark", dataset="$response.body#/dataset")
DATASET_LINKS = _links("name", "$response.body#/name", "get_dataset", "change_dataset", "archive_dataset_view")
DATASET_PAGE_LINKS = _links("name", "$response.body#/items/0/name", "get_dataset", "change_dataset",
                            "archive_dataset_view")
