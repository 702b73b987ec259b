{#
    One row per genre (and one for `(no genres listed)`). A rating counts
    towards every genre of its movie, so rating_count summed over genres
    exceeds the number of ratings; share_of_ratings is the fraction of all
    ratings whose movie has the genre.
#}
with

movie_genres as (

    select * from {{ ref('int_movie_genres') }}

),

ratings as (

    select * from {{ ref('int_ratings') }}

),

all_ratings as (

    select count(*) as total_rating_count
    from ratings

),

genre_movies as (

    select
        genre,
        is_listed_genre,
        count(*) as movie_count

    from movie_genres
    group by genre, is_listed_genre

),

genre_ratings as (

    select
        movie_genres.genre,
        count(*) as rating_count,
        count(distinct ratings.movie_id) as rated_movie_count,
        count(distinct ratings.user_id) as rater_count,
        cast(avg(cast(ratings.rating as decimal(18, 6))) as decimal(18, 6)) as avg_rating,
        min(ratings.rated_at) as first_rated_at,
        max(ratings.rated_at) as last_rated_at

    from ratings
    inner join movie_genres
        on ratings.movie_id = movie_genres.movie_id
    group by movie_genres.genre

),

genre_summary as (

    select
        genre_movies.genre,
        genre_movies.is_listed_genre,
        genre_movies.movie_count,
        coalesce(genre_ratings.rated_movie_count, 0) as rated_movie_count,
        coalesce(genre_ratings.rating_count, 0) as rating_count,
        coalesce(genre_ratings.rater_count, 0) as rater_count,
        genre_ratings.avg_rating,
        {{ share('coalesce(genre_ratings.rating_count, 0)', 'all_ratings.total_rating_count') }}
            as share_of_ratings,
        genre_ratings.first_rated_at,
        genre_ratings.last_rated_at

    from genre_movies
    cross join all_ratings
    left join genre_ratings
        on genre_movies.genre = genre_ratings.genre

)

select * from genre_summary
