"""The jupyter_kernel_test conformance suite against the built-in kernel."""
import unittest

import jupyter_kernel_test

import conftest  # noqa: F401  (installs the kernelspecs and sets JUPYTER_PATH)


class RhaiKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = "rhai"
    language_name = "rhai"
    file_extension = ".rhai"

    code_hello_world = 'print("hello, world")'
    code_stderr = 'debug("oops")'
    completion_samples = [{"text": "pri", "matches": {"print"}}]
    complete_code_samples = ["1 + 1", "let x = 3;", "fn f(a) { a }"]
    incomplete_code_samples = ["fn f(a) {", "let x = [1, 2,"]
    invalid_code_samples = ["let = = 2;"]
    code_page_something = "help()"
    code_generate_error = "throw \"boom\""
    code_execute_result = [{"code": "6 * 7", "result": "42"}, {"code": '"a" + "b"', "result": '"ab"'}]
    code_display_data = [{"code": 'display_html("<b>hi</b>")', "mime": "text/html"}]
    code_history_pattern = "6*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "print"
    code_clear_output = "clear_output()"


if __name__ == "__main__":
    unittest.main()
