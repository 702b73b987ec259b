{#
    Use the custom schema name as-is (`staging`, `intermediate`, `analytics`)
    instead of dbt's default `<target_schema>_<custom_schema>`.
    Models without a custom schema land in the target schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
