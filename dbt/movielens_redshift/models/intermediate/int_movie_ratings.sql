{#
    Averages are computed on decimal(18, 6): Redshift's avg() keeps the scale
    of its argument, so avg(numeric(2, 1)) would round to one decimal there.
#}
with

ratings as (

    select * from {{ ref('int_ratings') }}

),

movie_ratings as (

    select
        movie_id,
        count(*) as rating_count,
        cast(avg(cast(rating as decimal(18, 6))) as decimal(18, 6)) as avg_rating,
        cast(stddev_samp(cast(rating as double precision)) as decimal(18, 6)) as stddev_rating,
        min(rating) as min_rating,
        max(rating) as max_rating,
        min(rated_at) as first_rated_at,
        max(rated_at) as last_rated_at

    from ratings
    group by movie_id

)

select * from movie_ratings
