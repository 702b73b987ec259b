{#
    The best movies by Bayesian weighted rating (IMDb's formula):
    WR = (v * R + m * C) / (v + m), v = number of ratings, R = their mean,
    C = mean of all ratings, m = var('weighted_rating_min_ratings', 10).
    Only movies with at least m ratings are ranked; the top
    var('top_movies_limit', 100) are kept. Ties: more ratings first, then
    the lower movie_id.
#}
{%- set min_ratings = var('weighted_rating_min_ratings', 10) -%}
{%- set top_limit = var('top_movies_limit', 100) -%}

with

movies as (

    select * from {{ ref('stg_movies') }}

),

movie_ratings as (

    select * from {{ ref('int_movie_ratings') }}

),

overall as (

    {{ mean_rating() }}

),

scored as (

    select
        movies.movie_id,
        movies.title,
        movies.release_year,
        movies.genres,
        movie_ratings.rating_count,
        movie_ratings.avg_rating,
        {{ bayesian_average(
            'movie_ratings.rating_count', 'movie_ratings.avg_rating',
            'overall.overall_avg_rating', min_ratings
        ) }} as weighted_avg_rating,
        cast(overall.overall_avg_rating as decimal(18, 6)) as overall_avg_rating,
        {{ min_ratings }} as min_rating_count

    from movie_ratings
    inner join movies
        on movie_ratings.movie_id = movies.movie_id
    cross join overall
    where movie_ratings.rating_count >= {{ min_ratings }}

),

ranked as (

    select
        *,
        row_number() over (
            order by weighted_avg_rating desc, rating_count desc, movie_id asc
        ) as weighted_rank

    from scored

)

select * from ranked
where weighted_rank <= {{ top_limit }}
