"""Packaging: the core path needs no extra, a missing extra names its fix, the public API.

Each check runs in a fresh interpreter, since this one has long imported
everything. A missing extra is simulated by ``sys.modules[name] = None``, which
makes ``import name`` raise ``ImportError`` as an uninstalled module would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import promptcache

HEAVY = ("torch", "transformers", "fastapi", "starlette", "uvicorn", "langchain_core", "redis")
"""Modules the core path (keys, stores, the response cache) must not import."""


def run_python(
    code: str, *, cwd: Path, block: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the modules in ``block`` unimportable."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in block)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_json(code: str, *, cwd: Path, block: tuple[str, ...] = ()) -> Any:
    done = run_python(code, cwd=cwd, block=block)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_core_path_imports_neither_torch_nor_the_server(tmp_path: Path) -> None:
    loaded = run_json(
        f"""
        import json
        import promptcache
        from promptcache import (
            ChatRequest, Choice, Message, ResponseCache, Result, TextBlock, Usage,
            open_store, response_key,
        )

        heavy = {HEAVY!r}
        message = Message(role="user", content=(TextBlock(text="hi"),))
        request = ChatRequest(model="m", messages=(message,))
        key = response_key(request)
        result = Result(id="r1", model="m", created=1, choices=(Choice(text="hello"),),
                        usage=Usage(input_tokens=1, output_tokens=1))
        with open_store("sqlite:///cache.db") as store:
            cache = ResponseCache(store)
            cache.put(key, result)
            hit = cache.get(key)
            assert hit is not None and hit.result == result, hit
        core = sorted(name for name in heavy if name in sys.modules)

        from promptcache.integrations.langchain import PromptCacheLangChainCache
        from langchain_core.outputs import Generation

        lc = PromptCacheLangChainCache("sqlite:///langchain.db")
        lc.update("prompt", "llm", [Generation(text="cached")])
        assert lc.lookup("prompt", "llm") == [Generation(text="cached")]
        assert promptcache.PromptCacheLangChainCache is PromptCacheLangChainCache
        langchain = sorted(name for name in heavy if name in sys.modules)
        print(json.dumps({{"core": core, "langchain": langchain}}))
        """,
        cwd=tmp_path,
    )
    assert loaded["core"] == []
    # The LangChain adapter imports langchain-core (and pydantic), nothing else heavy.
    assert loaded["langchain"] == ["langchain_core"]


def test_import_promptcache_resolves_no_lazy_name(tmp_path: Path) -> None:
    loaded = run_json(
        """
        import json
        import promptcache
        print(json.dumps(sorted(set(promptcache._LAZY) & set(vars(promptcache)))))
        """,
        cwd=tmp_path,
    )
    assert loaded == []


MISSING = [
    pytest.param(
        ("redis",),
        "from promptcache import open_store; open_store('redis://127.0.0.1:1/0')",
        "Redis support needs the redis extra: pip install 'promptcache[redis]'",
        id="redis-url",
    ),
    pytest.param(
        ("redis",),
        "import promptcache; promptcache.RedisStoreConfig",
        "pip install 'promptcache[redis]'",
        id="redis-config",
    ),
    pytest.param(
        ("langchain_core",),
        "import promptcache.integrations.langchain",
        "The LangChain cache needs the langchain extra: pip install 'promptcache[langchain]'",
        id="langchain-module",
    ),
    pytest.param(
        ("langchain_core",),
        "from promptcache import PromptCacheLangChainCache",
        "pip install 'promptcache[langchain]'",
        id="langchain-export",
    ),
    pytest.param(
        ("torch",),
        "from promptcache import LocalEngineConfig",
        "promptcache.LocalEngineConfig needs the local extra: pip install 'promptcache[local]'",
        id="local-engine",
    ),
    pytest.param(
        ("httpx",),
        "from promptcache import UpstreamConfig",
        "pip install 'promptcache[server]'",
        id="upstream",
    ),
]


@pytest.mark.parametrize(("block", "code", "message"), MISSING)
def test_a_missing_extra_names_its_pip_install(
    tmp_path: Path, block: tuple[str, ...], code: str, message: str
) -> None:
    loaded = run_json(
        f"""
        import json
        from promptcache import MissingExtraError
        try:
            {code}
        except MissingExtraError as exc:
            print(json.dumps({{"message": str(exc), "import_error": isinstance(exc, ImportError),
                              "name": exc.name}}))
        """,
        cwd=tmp_path,
        block=block,
    )
    assert message in loaded["message"]
    assert loaded["import_error"]
    assert loaded["name"].partition(".")[0] == block[0]


CLI = [
    pytest.param(("typer",), ["serve"], "pip install 'promptcache[server,local]'", id="no-typer"),
    pytest.param(
        ("fastapi",), ["serve"], "pip install 'promptcache[server,local]'", id="no-fastapi"
    ),
    pytest.param(
        ("matplotlib",), ["bench"], "pip install 'promptcache[bench]'", id="no-matplotlib"
    ),
    pytest.param(
        ("torch",),
        ["serve", "--store", "none", "--port", "0"],
        "pip install 'promptcache[local]'",
        id="no-torch",
    ),
    pytest.param(
        ("redis",),
        ["stats", "--store", "redis://127.0.0.1:1/0"],
        "pip install 'promptcache[redis]'",
        id="no-redis",
    ),
]


@pytest.mark.parametrize(("block", "argv", "message"), CLI)
def test_the_console_script_prints_the_fix_not_a_traceback(
    tmp_path: Path, block: tuple[str, ...], argv: list[str], message: str
) -> None:
    done = run_python(
        f"sys.argv = ['promptcache', *{argv!r}]\nfrom promptcache.cli import main\nmain()\n",
        cwd=tmp_path,
        block=block,
    )
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_other_commands_work_without_an_extra_one_command_needs(tmp_path: Path) -> None:
    done = run_python(
        "sys.argv = ['promptcache', 'clear', '--store', 'memory://']\n"
        "from promptcache.cli import main\nmain()\n",
        cwd=tmp_path,
        block=("fastapi", "matplotlib", "torch"),
    )
    assert done.returncode == 0, done.stderr
    assert "Removed 0 entries" in done.stdout


def test_public_api_is_sorted_and_every_name_resolves() -> None:
    assert promptcache.__all__ == sorted(promptcache.__all__)
    assert len(set(promptcache.__all__)) == len(promptcache.__all__)
    for name in promptcache.__all__:
        assert getattr(promptcache, name) is not None, name
    assert set(promptcache._LAZY) <= set(dir(promptcache))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = promptcache.nonexistent  # type: ignore[attr-defined]
