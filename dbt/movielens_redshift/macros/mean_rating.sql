{#
    C of the Bayesian average: the mean of every rating in the ratings fact,
    in double precision. The one definition both analytics_movie_insights and
    analytics_top_movies select from (their weighted ratings must agree).
#}
{% macro mean_rating() -%}
    select avg(cast(rating as double precision)) as overall_avg_rating
    from {{ ref('int_ratings') }}
{%- endmacro %}
