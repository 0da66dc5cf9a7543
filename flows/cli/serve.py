"""Serving commands: one answer printed as a table, or the HTTP app."""

from __future__ import annotations

from typing import Annotated

import typer


def recommend(
    customer: Annotated[str | None, typer.Option(help="customer id (omit: anonymous)")] = None,
    session: Annotated[str, typer.Option(help="comma-separated item ids, oldest first")] = "",
    k: Annotated[int, typer.Option(min=1, max=100)] = 10,
) -> None:
    """Print the top-k for a customer and session from the champion model, with sizes."""
    from pydantic import ValidationError

    from pipeline.quiet import import_quietly

    import_quietly()
    from serving import NoChampionError, RecommendationRequest, Recommender

    try:
        request = RecommendationRequest(
            customer_id=customer, session_items=[s for s in session.split(",") if s], k=k
        )
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            typer.echo(f"invalid {field}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    try:
        recommender = Recommender.from_registry()
    except NoChampionError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    print_answer(recommender, recommender.recommend(request), request)


def print_answer(recommender, result, request) -> None:
    """The answer as a table: what each item is, its size and why it was picked."""
    from rich.console import Console
    from rich.table import Table

    shown = [*request.session_items, *(i.item_id for i in result.items)]
    about = recommender.describe(shown)

    def name(item_id: str) -> str:
        row = about.get(item_id)
        return f"{item_id} ({row['category']}, {row['brand']})" if row else item_id

    who = request.customer_id or "anonymous"
    state = "known customer" if result.known_customer else "unknown customer (cold start)"
    console = Console()
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns
        console = Console(width=120)
    console.print(f"model version {result.model_version}; {who}: {state}")
    console.print(f"session: {', '.join(map(name, request.session_items)) or '(empty)'}")
    if result.ignored_items:
        console.print(f"ignored unknown items: {', '.join(result.ignored_items)}")
    if result.degraded:
        console.print("(degraded: answered without the online store)")
    table = Table(title=f"top {len(result.items)} for {who}", title_justify="left")
    for column in ("#", "item", "category", "brand", "price", "size (fit)", "why"):
        table.add_column(column, justify="right" if column in ("#", "price") else "left")
    for rank, item in enumerate(result.items, 1):
        row = about.get(item.item_id, {})
        price = row.get("price")
        size = item.recommended_size
        fit = f"{size} ({item.fit_confidence:.0%})" if size and item.fit_confidence else size
        # The size column already says how well it fits: the reason column need not.
        why = [r for r in item.reasons if not r.startswith("fits you in")] or item.reasons
        table.add_row(
            str(rank),
            item.item_id,
            row.get("category") or "",
            row.get("brand") or "",
            f"{price:,.2f}" if price is not None else "",
            fit or "",
            "; ".join(why),
        )
    console.print(table)


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="processes (each loads the model)")] = 1,
) -> None:
    """Run the HTTP serving app (POST /recommendations, POST /events, GET /health, /metrics).

    With several workers, /metrics is prometheus_client's multiprocess mode: the workers'
    values in PROMETHEUS_MULTIPROC_DIR (if set, emptied first; else a fresh temporary
    directory, removed at exit), summed by whichever worker answers the scrape.
    """
    import os

    # Read before serving imports Feast, which sets the variable when unset (feast.metrics).
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

    import uvicorn

    from serving import NoChampionError
    from serving.metrics import multiprocess_dir

    # One process per core: a page view's small matrix products must not each fan out to a
    # BLAS thread pool that competes with the other workers.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")

    # Before the workers start: each reads the variable when it imports prometheus_client.
    with multiprocess_dir(workers, given):
        try:
            uvicorn.run(
                "serving.app:create_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level="warning",
                access_log=False,
            )
        except NoChampionError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
