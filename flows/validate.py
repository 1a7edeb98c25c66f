"""The validate flow: check the current dataset version against its contracts (project + source) and gate on it."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import VALIDATION_PAGE, VALIDATION_REPORT, artifact_key
from mmpipe.config import Config
from mmpipe.contracts.validate import validate_dataset
from mmpipe.contracts.verdict import ValidationReport
from mmpipe.errors import ContractViolation
from mmpipe.wording import counted


# Called, never submitted: GX is not thread-safe, so validation runs in the flow's own thread.
@task(name="validate-dataset", cache_policy=NO_CACHE, persist_result=False)
def validate_dataset_task(data_dir: str, config: Config) -> ValidationReport:
    return validate_dataset(data_dir, config)


@flow(name="validate", flow_run_name="validate {data_dir}")
def validate_flow(data_dir: str, config: Config) -> dict:
    """Validate; publish `validation-report` and `validation-page`; fail the run when a critical expectation fails."""
    report = validate_dataset_task(data_dir, config)
    create_markdown_artifact(key=artifact_key(VALIDATION_REPORT, data_dir), markdown=report.to_markdown(),
                             description=f"Contracts on dataset {report.dataset_version}")
    create_link_artifact(key=artifact_key(VALIDATION_PAGE, data_dir), link=report.page.absolute().as_uri(),
                         link_text=f"Validation page of dataset {report.dataset_version} (opens offline)",
                         description=f"{report.page}: every expectation, its severity and what was observed")
    logger = get_run_logger()
    logger.info("suites: %s", report.contracts_line)
    if report.notice:
        logger.warning(report.notice)
    for warning in report.warnings:
        logger.warning("contract warning: %s: %s", warning.expectation, warning.observed)
    if not report.success:
        raise ContractViolation(report.failure_message(), report)
    logger.info("dataset %s passed %s%s; page: %s", report.dataset_version,
                counted(len(report.outcomes), "expectation"),
                " (unchanged: reused the stored result)" if report.reused else "", report.page)
    return report.summary()
