{#
    Return the first capture group of a POSIX regular expression match, or
    null when there is no match.

    Keep patterns free of backslashes (use [(] [)] [0-9] [[:space:]]):
    Redshift string literals treat backslash as an escape character,
    PostgreSQL (standard_conforming_strings) does not.
#}
{% macro regexp_extract(string, pattern) -%}
    {{ adapter.dispatch('regexp_extract', 'movielens_redshift')(string, pattern) }}
{%- endmacro %}

{# Redshift: regexp_substr with the 'e' parameter returns the first subexpression. #}
{% macro default__regexp_extract(string, pattern) -%}
    nullif(regexp_substr({{ string }}, '{{ pattern }}', 1, 1, 'e'), '')
{%- endmacro %}

{# PostgreSQL: substring(... from pattern) returns the first parenthesized group. #}
{% macro postgres__regexp_extract(string, pattern) -%}
    substring({{ string }} from '{{ pattern }}')
{%- endmacro %}

{# dbt-redshift inherits from dbt-postgres (dispatch order redshift__, postgres__, default__),
   so Redshift must be named explicitly or it would pick up postgres__. #}
{% macro redshift__regexp_extract(string, pattern) -%}
    {{ default__regexp_extract(string, pattern) }}
{%- endmacro %}
