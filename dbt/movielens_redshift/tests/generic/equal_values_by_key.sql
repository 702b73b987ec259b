{#
    Fails with each `key` whose `column_name` differs from `compare_column` in
    `compare_model` (or has no row there): two models that must agree by value,
    not only by row count.
#}
{% test equal_values_by_key(model, column_name, compare_model, compare_column, key) %}

select
    model_rows.{{ key }},
    model_rows.{{ column_name }} as model_value,
    compare_rows.{{ compare_column }} as compare_value
from {{ model }} as model_rows
left join {{ compare_model }} as compare_rows
    on model_rows.{{ key }} = compare_rows.{{ key }}
where
    compare_rows.{{ key }} is null
    or model_rows.{{ column_name }} <> compare_rows.{{ compare_column }}

{% endtest %}
