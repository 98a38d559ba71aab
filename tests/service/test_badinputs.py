"""The bad-input corpus (:mod:`tests.service.badinputs`) against the service and the CLI.

Service: no 5xx, and every refusal is a one-line JSON ``detail`` with the status the corpus expects. CLI: no
traceback; a refused file is one ``error:`` line on stderr with exit status 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fashionlens.cli import main as cli_main
from fashionlens.service.app import MULTIPART_OVERHEAD, create_app

from .badinputs import BadFile, BadRequest, bad_files, bad_requests, write_files
from .conftest import ServiceModels

MAX_UPLOAD = 2 * 1024 * 1024


@functools.cache
def files() -> dict[str, BadFile]:
    return {case.name: case for case in bad_files()}


def request_names() -> list[str]:
    return [case.name for case in bad_requests("x", b"", MAX_UPLOAD, MAX_UPLOAD + MULTIPART_OVERHEAD)]


def test_the_corpus_is_large_and_varied() -> None:
    cases = list(files().values())
    assert len(cases) + len(request_names()) >= 80
    assert sum(case.accepted for case in cases) >= 15 and sum(not case.accepted for case in cases) >= 25
    assert {413, 415, 400} <= set().union(*(case.statuses for case in cases))


@pytest.fixture(scope="module")
def app(service_models: ServiceModels) -> FastAPI:
    return create_app(service_models.tagger, service_models.hierarchy, service_models.index,
                      max_upload_bytes=MAX_UPLOAD)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def assert_answer(response: object, statuses: frozenset[int], what: str) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, f"{what}: {status} {response.text[:300]}"  # type: ignore[attr-defined]
    assert status in statuses, f"{what}: {status} not in {sorted(statuses)}: {response.text[:300]}"  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    if status >= 400:
        detail = body["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail and len(detail) < 500, f"{what}: {detail!r}"


@pytest.mark.parametrize("name", list(files()))
def test_uploads_are_answered_or_refused_in_one_line(client: TestClient, name: str) -> None:
    case = files()[name]
    for endpoint, key in (("/v1/tag", "tags"), ("/v1/search", "results")):
        response = client.post(endpoint, files={"image": (case.name, case.data, "application/octet-stream")})
        assert_answer(response, case.statuses, f"{endpoint} {name}")
        if response.status_code == 200:
            assert key in response.json()
        else:
            assert case.name in response.json()["detail"]  # the refusal names the upload


@pytest.mark.parametrize("name", request_names())
def test_malformed_requests_get_one_line_4xx(client: TestClient, service_models: ServiceModels, name: str) -> None:
    item_id = str(service_models.catalogue.frame["item_id"].iloc[0])
    photo = service_models.queries[0].read_bytes()
    case: BadRequest = {c.name: c for c in bad_requests(item_id, photo, MAX_UPLOAD,
                                                        MAX_UPLOAD + MULTIPART_OVERHEAD)}[name]
    content = case.content() if callable(case.content) else case.content
    response = client.request(case.method, case.url, params=case.params, files=case.files, content=content,
                              headers=case.headers)
    assert_answer(response, case.statuses, name)


def test_the_service_still_answers_after_the_corpus(client: TestClient, service_models: ServiceModels) -> None:
    photo = service_models.queries[1]
    response = client.post("/v1/search", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert response.status_code == 200 and response.json()["results"]


# ----------------------------------------------------------------------------------------------- CLI
def run_cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
            ) -> tuple[int, str, str]:
    """``python -m fashionlens ARGS`` in this process (its real entry point): exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["fashionlens", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli_main()
    captured = capsys.readouterr()
    code = exited.value.code
    return code if isinstance(code, int) else (0 if code is None else 1), captured.out, captured.err


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_files(tmp_path_factory.mktemp("corpus"), list(files().values()))


def assert_cli_refusal(code: int, out: str, err: str, name: str) -> None:
    """Exit status 2 and exactly one ``error:`` line naming ``name``, no traceback."""
    assert "Traceback" not in out + err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and name in errors[0], (code, err)


@pytest.mark.slow  # ~15 s: one CLI run per refused file, each loading the embedder
def test_cli_search_answers_or_refuses_each_file(service_models: ServiceModels, corpus_dir: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    accepted = [path for name, path in corpus_dir.items() if files()[name].accepted]
    code, out, err = run_cli(["search", "--index", str(service_models.index), "--k", "2", "--json",
                              *map(str, accepted)], capsys, monkeypatch)
    assert code == 0 and "Traceback" not in err, err
    assert len([line for line in out.splitlines() if line.startswith("{")]) == 2 * len(accepted)
    for name, path in corpus_dir.items():
        case = files()[name]
        if case.accepted:
            continue
        code, out, err = run_cli(["search", "--index", str(service_models.index), str(path)], capsys, monkeypatch)
        if code == 0 and 200 in case.statuses:
            continue  # broken-but-decodable (e.g. a JPEG with missing data): PIL may fill the rest
        assert_cli_refusal(code, out, err, name)


def test_cli_similar_refuses_hostile_filters_and_ids(service_models: ServiceModels,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    item_id = str(service_models.catalogue.frame["item_id"].iloc[0])
    index = str(service_models.index)
    hostile = [[item_id, "--filter", expression] for expression in (
        "path=/etc/passwd", "garbage", "gender=", "x" * 5000 + "=y", "colour=Red")]
    hostile += [[bad_id] for bad_id in ("../../etc/passwd", "a" * 20_000, "\u202e👗", "abc\x01def", "-")]
    for args in hostile:
        code, out, err = run_cli(["similar", "--index", index, *args], capsys, monkeypatch)
        assert "Traceback" not in out + err and code == 2, (args[:2], code, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err[:300]


def test_cli_tag_predict_never_shows_a_traceback(service_models: ServiceModels, corpus_dir: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what holds whether ``tag predict`` stops at the first bad file or reports each in an error column."""
    refused = [name for name in corpus_dir if 200 not in files()[name].statuses]
    for name in refused[::4]:  # a sample: each run loads the tagger
        code, out, err = run_cli(["tag", "predict", "--model", str(service_models.tagger),
                                  str(corpus_dir["photo.webp"]), str(corpus_dir[name])], capsys, monkeypatch)
        assert "Traceback" not in out + err, err
        assert code != 0 or name in out, (name, code, out, err)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert all(len(line) < 500 for line in errors)
