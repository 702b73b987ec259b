{#
    One row per user and listed genre they rated, ranked: genre_rank 1 is
    the user's favourite genre (most ratings, then highest mean rating, then
    genre name, so that ties resolve the same way on every engine).
    `(no genres listed)` is not a genre and is left out.
#}
with

ratings as (

    select * from {{ ref('int_ratings') }}

),

movie_genres as (

    select * from {{ ref('int_movie_genres') }}
    where is_listed_genre

),

user_genres as (

    select
        ratings.user_id,
        movie_genres.genre,
        count(*) as rating_count,
        cast(avg(cast(ratings.rating as decimal(18, 6))) as decimal(18, 6)) as avg_rating

    from ratings
    inner join movie_genres
        on ratings.movie_id = movie_genres.movie_id
    group by ratings.user_id, movie_genres.genre

),

ranked as (

    select
        *,
        row_number() over (
            partition by user_id
            order by rating_count desc, avg_rating desc, genre asc
        ) as genre_rank

    from user_genres

)

select * from ranked
