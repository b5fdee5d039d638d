"""The Python interpreter that every py_binary and py_test runs under.

A repository rule: the interpreter is `$BAZEL_PYTHON` when Bazel is given
`--repo_env=BAZEL_PYTHON=/path/to/python` (relative paths are taken from the
workspace root), else the project's `.venv/bin/python` (made by `make venv`).
Bazel's own default would run whatever `python3` its sandbox finds on PATH,
which lacks TensorFlow. The path is not resolved: a virtualenv's python must
be called by its own path to see its site-packages.
"""

_DEFAULT_INTERPRETER = ".venv/bin/python"

_BUILD = """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "python3",
    interpreter_path = "{interpreter}",
    python_version = "PY3",
    stub_shebang = "#!{interpreter}",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":python3",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _python_interpreter_impl(ctx):
    root = str(ctx.path(Label("@//:WORKSPACE")).dirname)
    interpreter = ctx.os.environ.get("BAZEL_PYTHON", "") or _DEFAULT_INTERPRETER
    if not interpreter.startswith("/"):
        interpreter = root + "/" + interpreter
    if not ctx.path(interpreter).exists:
        fail(("No Python interpreter at %s: run `make venv` in %s, or pass " +
              "--repo_env=BAZEL_PYTHON=/path/to/python.") % (interpreter, root))
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", _BUILD.format(interpreter = interpreter))

python_interpreter = repository_rule(
    implementation = _python_interpreter_impl,
    environ = ["BAZEL_PYTHON"],
    local = True,
    doc = "A py_runtime toolchain for $BAZEL_PYTHON or .venv/bin/python.",
)
