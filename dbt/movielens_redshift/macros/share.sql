{#
    numerator / denominator as decimal(18, 6), divided in double precision;
    null when the denominator is 0 or null.
#}
{% macro share(numerator, denominator) -%}
    cast(cast({{ numerator }} as double precision) / nullif({{ denominator }}, 0) as decimal(18, 6))
{%- endmacro %}
