{#
    One row per movie (all movies, rated or not). weighted_avg_rating is a
    Bayesian average that pulls movies with few ratings towards the mean of
    all ratings: (v * R + m * C) / (v + m), m = var('weighted_rating_min_ratings', 10)
    (macros/bayesian_average.sql; analytics_top_movies ranks by the same).
#}
{%- set min_ratings = var('weighted_rating_min_ratings', 10) -%}

with

movies as (

    select * from {{ ref('stg_movies') }}

),

links as (

    select * from {{ ref('stg_links') }}

),

movie_ratings as (

    select * from {{ ref('int_movie_ratings') }}

),

tags as (

    select * from {{ ref('stg_tags') }}

),

movie_tags as (

    select
        movie_id,
        count(*) as tag_count,
        count(distinct tag_normalized) as distinct_tag_count,
        count(distinct user_id) as tagger_count

    from tags
    group by movie_id

),

overall as (

    {{ mean_rating() }}

),

movie_insights as (

    select
        movies.movie_id,
        movies.title,
        movies.raw_title,
        movies.release_year,
        movies.genres,
        movies.genre_count,
        case
            when movies.genre_count > 0 then {{ dbt.split_part('movies.genres', "'|'", 1) }}
        end as primary_genre,
        coalesce(movie_ratings.rating_count, 0) as rating_count,
        movie_ratings.avg_rating,
        {{ bayesian_average(
            'movie_ratings.rating_count', 'movie_ratings.avg_rating',
            'overall.overall_avg_rating', min_ratings
        ) }} as weighted_avg_rating,
        movie_ratings.stddev_rating,
        movie_ratings.min_rating,
        movie_ratings.max_rating,
        movie_ratings.first_rated_at,
        movie_ratings.last_rated_at,
        coalesce(movie_tags.tag_count, 0) as tag_count,
        coalesce(movie_tags.distinct_tag_count, 0) as distinct_tag_count,
        coalesce(movie_tags.tagger_count, 0) as tagger_count,
        links.imdb_id,
        links.tmdb_id,
        links.imdb_url

    from movies
    cross join overall
    left join movie_ratings
        on movies.movie_id = movie_ratings.movie_id
    left join movie_tags
        on movies.movie_id = movie_tags.movie_id
    left join links
        on movies.movie_id = links.movie_id

)

select * from movie_insights
