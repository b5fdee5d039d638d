"""Macros for the project's BUILD files (written by bazel/generate_build.py)."""

def pytest_test(name, srcs, deps = [], data = [], **kwargs):
    """A py_test that runs one pytest module with `bazel/pytest_main.py`.

    Args:
      name: the target name (the module's name).
      srcs: the test module (first) and any helper files.
      deps: py_library targets it imports.
      data: files it reads.
      **kwargs: passed to py_test (size, timeout, tags...).
    """
    native.py_test(
        name = name,
        srcs = srcs + ["//bazel:pytest_main.py"],
        main = "//bazel:pytest_main.py",
        args = ["$(location %s)" % srcs[0]],
        deps = deps,
        data = data + ["//:pytest.ini"],
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
