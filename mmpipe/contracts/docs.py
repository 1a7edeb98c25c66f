"""GX Data Docs for a validation: one page per distinct result and an index that links them."""

from __future__ import annotations

from pathlib import Path


def write_docs(folder: Path, shard_results: dict[str, dict], dataset_result: dict) -> Path:
    """GX Data Docs pages (one per distinct result) and an index that links them."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    from mmpipe.files import atomic_path

    pages: dict[str, tuple[str, bool]] = {}
    rendered: dict[int, str] = {}
    view, renderer = DefaultJinjaPageView(), ValidationResultsPageRenderer()  # templates compile once
    for scope, result in [("dataset", dataset_result), *shard_results.items()]:
        name = "dataset.html" if scope == "dataset" else Path(scope).stem + ".html"
        if id(result) not in rendered:  # shards validated together share one page
            suite_result = ExpectationSuiteValidationResult(
                success=result["success"], suite_name=result["suite_name"], statistics=result["statistics"],
                meta=result["meta"], suite_parameters=result.get("suite_parameters", {}),
                results=[ExpectationValidationResult(
                    success=item["success"], expectation_config=ExpectationConfiguration(**item["expectation_config"]),
                    result=item["result"], meta=item["meta"], exception_info=item["exception_info"],
                ) for item in result["results"]],
            )
            html = view.render(renderer.render(suite_result))
            with atomic_path(folder / name) as temp:
                temp.write_text(html, encoding="utf-8")
            rendered[id(result)] = name
        pages[scope] = (rendered[id(result)], result["success"])
    links = "\n".join(f'<li><a href="{page}">{scope}</a>: {"passed" if ok else "failed"}</li>'
                      for scope, (page, ok) in pages.items())
    index = folder / "index.html"
    with atomic_path(index) as temp:
        temp.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>mmpipe validation</title></head>"
                        f"<body><h1>Validation results</h1><ul>\n{links}\n</ul></body></html>\n", encoding="utf-8")
    return index
