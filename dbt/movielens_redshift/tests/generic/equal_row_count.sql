{#
    Fails (one row) when `model` and `compare_model` hold different numbers
    of rows, e.g. an incremental model that drifted from its source.
#}
{% test equal_row_count(model, compare_model) %}

select
    model_counts.model_rows,
    compare_counts.compare_rows
from (select count(*) as model_rows from {{ model }}) as model_counts
cross join (select count(*) as compare_rows from {{ compare_model }}) as compare_counts
where model_counts.model_rows <> compare_counts.compare_rows

{% endtest %}
