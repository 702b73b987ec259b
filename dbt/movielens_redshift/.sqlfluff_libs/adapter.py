"""Stand-in for dbt's `adapter` so sqlfluff's jinja templater can render
macros that call adapter.dispatch(). Lint only: renders
`macro_name(first_arg, 'other', 'args')`, the shape of this project's
dispatched macros (an expression, then string literals)."""


def dispatch(macro_name, macro_namespace=None):
    def render(first, *rest):
        args = [str(first)] + [f"'{a}'" for a in rest]
        return f"{macro_name}({', '.join(args)})"

    return render
