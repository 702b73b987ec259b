{#
    One row per calendar quarter with at least one rating: volume, raters,
    new raters (users whose first rating fell in the quarter), the mean
    rating and its change from the previous such quarter, the year's totals
    and the running total. Window frames are explicit (Redshift requires a
    frame for aggregate windows with an order by).
#}
with

ratings as (

    select * from {{ ref('int_ratings') }}

),

user_first_quarter as (

    select
        user_id,
        min(rated_quarter_start) as first_quarter_start

    from ratings
    group by user_id

),

new_raters as (

    select
        first_quarter_start as rated_quarter_start,
        count(*) as new_rater_count

    from user_first_quarter
    group by first_quarter_start

),

quarterly as (

    select
        rated_year,
        rated_quarter,
        rated_quarter_start,
        count(*) as rating_count,
        count(distinct user_id) as rater_count,
        count(distinct movie_id) as rated_movie_count,
        sum(cast(rating as decimal(18, 6))) as rating_sum

    from ratings
    group by rated_year, rated_quarter, rated_quarter_start

),

trends as (

    select
        quarterly.rated_year,
        quarterly.rated_quarter,
        quarterly.rated_quarter_start,
        quarterly.rating_count,
        quarterly.rater_count,
        coalesce(new_raters.new_rater_count, 0) as new_rater_count,
        quarterly.rated_movie_count,
        cast(quarterly.rating_sum / quarterly.rating_count as decimal(18, 6)) as avg_rating,
        sum(quarterly.rating_count) over (
            partition by quarterly.rated_year
        ) as year_rating_count,
        cast(
            sum(quarterly.rating_sum) over (partition by quarterly.rated_year)
            / sum(quarterly.rating_count) over (partition by quarterly.rated_year)
            as decimal(18, 6)
        ) as year_avg_rating,
        sum(quarterly.rating_count) over (
            order by quarterly.rated_quarter_start
            rows between unbounded preceding and current row
        ) as cumulative_rating_count,
        lag(quarterly.rating_sum / quarterly.rating_count) over (
            order by quarterly.rated_quarter_start
        ) as previous_avg_rating

    from quarterly
    left join new_raters
        on quarterly.rated_quarter_start = new_raters.rated_quarter_start

),

final as (

    select
        rated_year,
        rated_quarter,
        rated_quarter_start,
        rating_count,
        rater_count,
        new_rater_count,
        rated_movie_count,
        avg_rating,
        cast(avg_rating - previous_avg_rating as decimal(18, 6)) as avg_rating_change,
        year_rating_count,
        year_avg_rating,
        cumulative_rating_count

    from trends

)

select * from final
