{#
    Row-count expectation: fails (one row) when the relation holds fewer than
    `min_value` rows. Meant for sources, where a short load is the usual
    failure (e.g. `min_value: 100000` for ml-latest-small's ratings).
#}
{% test min_row_count(model, min_value) %}

select row_count
from (
    select count(*) as row_count
    from {{ model }}
) as counted
where row_count < {{ min_value }}

{% endtest %}
