{#
    Bayesian (IMDb-style) weighted average: (v * R + m * C) / (v + m), with
    v the number of ratings, R their mean, C the mean of all ratings and m
    the weight of the prior (the minimum count). A movie without ratings
    (v null or 0) gets C. Computed in double precision, returned as
    decimal(18, 6).
#}
{% macro bayesian_average(rating_count, avg_rating, overall_avg_rating, min_count) -%}
    cast(
        (
            coalesce({{ rating_count }} * cast({{ avg_rating }} as double precision), 0)
            + {{ min_count }} * cast({{ overall_avg_rating }} as double precision)
        ) / (coalesce({{ rating_count }}, 0) + {{ min_count }})
        as decimal(18, 6)
    )
{%- endmacro %}
